"""The oracle of dataset-building tests: the original's example packing, step by step."""


def reference_build(events, rng, max_len, cls_id, sep_id, state=None):
    """Spec d.2, step by step. Returns dicts: ids, first_length, buffer, two_seg_target,
    flushed.

    events: a token-id list per non-blank line, None for a document boundary.

    `state` (a dict) carries the target length across calls with the same rng.
    """
    state = {} if state is None else state
    out, buffer, target = [], [], state.get("target", max_len)
    for event in events:
        if event is not None:
            buffer.append(event)
        if sum(map(len, buffer)) == 0 or (event is not None and sum(map(len, buffer)) < target):
            continue
        single = rng.random() < 0.1
        a_target = 100000 if single else (target - 3) // 2
        a, b = [], []
        for sentence in buffer:
            if len(a) == 0:
                a = a + sentence
            elif len(a) + len(sentence) < a_target:
                a = a + sentence
            elif len(b) == 0 and len(a) < a_target and rng.random() < 0.5:
                a = a + sentence
            else:
                b = b + sentence
        a = a[:max_len - 2]
        b = b[:max(0, max_len - len(a) - 3)]
        ids = [cls_id] + a + [sep_id] + (b + [sep_id] if b else [])
        out.append(dict(ids=ids, first_length=len(a) + 2, buffer=buffer, two_seg_target=(target - 3) // 2,
                        flushed=event is None))
        buffer = []
        target = rng.randint(5, max_len) if rng.random() < 0.05 else max_len
    # Lines without tokens may stay buffered; they can never change an example.
    assert not any(buffer), "events must end with a document boundary"
    state["target"] = target
    return out

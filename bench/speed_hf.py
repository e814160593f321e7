"""HuggingFace PyTorch ELECTRA side of bench/bench_speed.py: the same workloads, the peer's way.

* pretrain: ElectraForPreTraining (discriminator) + ElectraForMaskedLM (generator)
  sharing the discriminator's embeddings module, one ELECTRA step as ours does it:
  mask max_predictions_per_seq positions per example (85% [MASK]), generator forward,
  its MLM head on the masked positions only (as ours; HF's own forward would project
  every position onto the vocabulary, ~30% more work for ELECTRA-Small), Gumbel-argmax
  sampling without gradient, discriminator forward, loss MLM + 50 x replaced-token
  BCE, backward, global-norm clipping at 1.0, AdamW (fused, the fastest CPU one).
* finetune: ElectraForSequenceClassification (2 labels) train step, same optimizer.
* inference: ElectraForSequenceClassification forward in eval mode, inference_mode.
bfloat16 is torch.autocast("cpu", dtype=torch.bfloat16) around the forward, as
PyTorch recommends (weights and optimizer stay float32, as ours). The batch is the
same full-length random [CLS] ... [SEP] sequences as ours.
"""

import contextlib

import torch
import transformers

MATMUL_SIZE = 4096
CLS, SEP, MASK = 101, 102, 103


def _autocast(precision):
    if precision == "bfloat16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision != "float32":
        raise ValueError(f"precision {precision!r}: the HF side runs float32 or bfloat16")
    return contextlib.nullcontext()


def _batch(batch, seq, vocab_size):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab_size, (batch, seq), generator=generator)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def _optimizer(params):
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, eps=1e-6, fused=True)


def _matmul(precision):
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE).to(dtype)
    return lambda: torch.mm(a, b)[0, 0].item()


class _Pretraining:
    """One ELECTRA pre-training step (see the module docstring)."""

    def __init__(self, configs, batch, seq, n_predictions, precision):
        disc_config = transformers.ElectraConfig(**configs["discriminator"])
        self.disc = transformers.ElectraForPreTraining(disc_config)
        self.gen = transformers.ElectraForMaskedLM(
            transformers.ElectraConfig(**configs["generator"]))
        self.gen.electra.embeddings = self.disc.electra.embeddings  # shared, as ELECTRA's
        self.gen.tie_weights()  # the MLM head's output matrix = the shared word embeddings
        params = {id(p): p for p in [*self.disc.parameters(), *self.gen.parameters()]}
        self.params = list(params.values())
        self.optimizer = _optimizer(self.params)
        self.ids, self.mask, self.segments = _batch(batch, seq, disc_config.vocab_size)
        # Every position but [CLS] and [SEP] may be masked.
        self.candidates = torch.ones(batch, seq)
        self.candidates[:, 0] = self.candidates[:, -1] = 0
        self.n_predictions, self.precision = n_predictions, precision

    def _losses(self):
        ids, n = self.ids, self.n_predictions
        positions = torch.multinomial(self.candidates, n, replacement=True)  # [B, N]
        original = ids.gather(1, positions)
        keep = torch.rand(original.shape) < 0.15  # 15% of chosen positions keep their token
        masked = ids.scatter(1, positions, torch.where(keep, original, torch.full_like(
            original, MASK)))
        hidden = self.gen.electra(masked, self.mask, self.segments)[0]  # [B, S, Hg]
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.gen.generator_lm_head(self.gen.generator_predictions(hidden)).float()
        mlm = torch.nn.functional.cross_entropy(logits.flatten(0, 1), original.flatten())
        with torch.no_grad():
            gumbel = -torch.log(-torch.log(torch.rand_like(logits) + 1e-9) + 1e-9)
            fake = masked.scatter(1, positions, (logits + gumbel).argmax(-1))
        disc_logits = self.disc(fake, self.mask, self.segments).logits.float()
        disc = torch.nn.functional.binary_cross_entropy_with_logits(
            disc_logits, (fake != ids).float(), weight=self.mask.float())
        return mlm + 50.0 * disc

    def step(self):
        with _autocast(self.precision):
            loss = self._losses()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        return loss.item()


class _Classification:
    """Fine-tuning step or inference of ElectraForSequenceClassification."""

    def __init__(self, configs, batch, seq, precision, train):
        config = transformers.ElectraConfig(**configs["discriminator"], num_labels=2)
        self.model = transformers.ElectraForSequenceClassification(config)
        self.optimizer = _optimizer(list(self.model.parameters()))
        self.ids, self.mask, self.segments = _batch(batch, seq, config.vocab_size)
        self.labels = torch.zeros(batch, dtype=torch.long)
        self.precision, self.train = precision, train
        self.model.train(train)

    def step(self):
        if not self.train:
            with torch.inference_mode(), _autocast(self.precision):
                return self.model(self.ids, self.mask, self.segments).logits[0, 0].item()
        with _autocast(self.precision):
            loss = self.model(self.ids, self.mask, self.segments, labels=self.labels).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.item()


def build(workload, precision, args, info):
    """Returns a fn running one step; `info` is the TF side's describe() (configs)."""
    if workload == "matmul":
        return _matmul(precision)
    torch.manual_seed(0)
    if workload == "pretrain":
        return _Pretraining(info["hf_configs"], args.batch, args.seq,
                            info["max_predictions_per_seq"], precision).step
    return _Classification(info["hf_configs"], args.batch, args.seq, precision,
                           train=workload == "finetune").step


def describe(args):
    del args
    return {"version": f"torch {torch.__version__}, transformers {transformers.__version__}",
            "threads": torch.get_num_threads()}

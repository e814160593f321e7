"""Stop-on-signal for long runs: SIGTERM / SIGINT end training at the next step boundary.

While a `StopRequest` is active, SIGTERM (what GCE, Kubernetes and Slurm send before a
preemption) and SIGINT (Ctrl-C) only request a stop. The training loop checks the
request between steps, saves a checkpoint at the step reached and raises `Preempted`;
the scripts then print its one-line message and exit with EXIT_CODE. Re-running the
same command resumes from that checkpoint. A second Ctrl-C aborts at once (the last
complete checkpoint stays intact: checkpoints are written atomically).

This module does not import TensorFlow, so util/cli.py can use it before TF starts.
"""

import signal
import socket
import threading

# EX_TEMPFAIL of sysexits.h ("temporary failure, the user is invited to retry"). Not
# 143 (128 + SIGTERM): shells report that for a process killed by SIGTERM without
# saving, and it must stay distinguishable from "stopped cleanly, checkpoint saved".
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint (scripts exit EXIT_CODE)."""

    def __init__(self, signal_name, step, checkpoint_path, during="training"):
        self.signal_name, self.step, self.checkpoint_path = signal_name, step, checkpoint_path
        where = f"at step {step}" if during == "training" else f"at step {step} ({during})"
        saved = (f"checkpoint saved to {checkpoint_path}" if checkpoint_path
                 else "checkpoint saved by the chief worker")
        super().__init__(f"Stopped by {signal_name} {where}; {saved}; re-run the same "
                         "command to continue.")


class StopRequest:
    """Context manager: while active, SIGTERM / SIGINT request a stop instead of killing.

    Python runs signal handlers in the main thread only, between bytecodes, so a plain
    handler would wait until a compiled multi-step call returns (up to steps_per_loop
    steps, minutes on a slow device: longer than GCE's 30 s notice). With
    signal.set_wakeup_fd the C-level handler also writes the signal number to a socket;
    a watcher thread reads it and calls the listeners at once, e.g. setting the
    tf.Variable that the compiled loop checks before each step.

    Outside the main thread (signals cannot be handled there) it does nothing.
    """

    def __init__(self, signals=SIGNALS):
        self._signals = tuple(signals)
        self._listeners = []
        self._lock = threading.Lock()
        self.signal_name = None  # name of the first signal received, e.g. "SIGTERM"
        self._handled = 0  # signals seen by the Python-level handler
        self._previous = {}
        self._previous_wakeup = None
        self._sockets = None
        self._thread = None

    @property
    def requested(self):
        """Whether a stop was requested."""
        return self.signal_name is not None

    def add_listener(self, fn):
        """Calls fn() (from any thread) when a stop is requested, or now if it was."""
        with self._lock:
            self._listeners.append(fn)
            fire = self.requested
        if fire:
            fn()

    def request(self, signum):
        """Records a stop request for signal number `signum` and notifies listeners."""
        with self._lock:
            first = self.signal_name is None
            if first:
                self.signal_name = signal.Signals(signum).name
            listeners = list(self._listeners)
        if first:
            for fn in listeners:
                fn()

    def _handle(self, signum, frame):
        del frame
        self._handled += 1
        if signum == signal.SIGINT and self._handled > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.request(signum)

    def _watch(self, reader):
        while True:
            data = reader.recv(64)  # one byte per signal (its number)
            for signum in data:
                if signum == 0:  # written by __exit__
                    return
                if signum in self._signals:  # other Python-handled signals write too
                    self.request(signum)
            if not data:  # the socket was closed
                return

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = socket.socketpair()
        writer.setblocking(False)  # set_wakeup_fd requires a non-blocking fd
        self._sockets = (reader, writer)
        self._thread = threading.Thread(target=self._watch, args=(reader,),
                                        name="stop-signal-watcher", daemon=True)
        self._thread.start()
        self._previous_wakeup = signal.set_wakeup_fd(writer.fileno())
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._sockets is None:
            return False
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        reader, writer = self._sockets
        writer.setblocking(True)
        writer.send(b"\0")  # wakes the watcher, which returns on the 0 byte
        self._thread.join(timeout=10)
        reader.close()
        writer.close()
        self._sockets = None
        return False

"""A small real job for the runner tests: speaks the real lightunetr_core job protocol (EventWriter,
CancelToken, exit codes) and can start a grandchild process the way ``PythonSlicer`` starts the real
interpreter, ignore the cancel file (a hung job) or fail.

python job_script.py --steps 5 --sleep 0.05 [--grandchild PIDFILE] [--ignore-cancel] [--fail]
        [--events json] [--cancel-file F]
"""

import argparse
import os
import subprocess
import sys
import time

from lightunetr_core.jobs import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, CancelToken, EventWriter

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=5)
p.add_argument("--sleep", type=float, default=0.05)
p.add_argument("--grandchild")
p.add_argument("--ignore-cancel", action="store_true")
p.add_argument("--fail", action="store_true")
p.add_argument("--events", default="human")
p.add_argument("--cancel-file")
args = p.parse_args()

ev = EventWriter.for_cli("test", args.events)
token = CancelToken(args.cancel_file)
if args.ignore_cancel:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = None
if args.grandchild:
    child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"])
    with open(args.grandchild, "w") as f:
        f.write(str(child.pid))
ev.started(total=args.steps)
ev.stage("inference", "working")
print("a plain log line", file=sys.stderr, flush=True)
print("not json on stdout", flush=True)
t0 = time.time()
for i in range(args.steps):
    if not args.ignore_cancel and token.cancelled():
        ev.emit("cancelled", message=token.reason, checkpoint=None)
        sys.exit(EXIT_CANCELLED)
    time.sleep(args.sleep)
    ev.progress(i + 1, args.steps, rate=(i + 1) / (time.time() - t0))
if args.fail:
    ev.error("synthetic failure: the input is bad; use another input", kind="bad_input")
    sys.exit(EXIT_ERROR)
ev.emit("output", path="/nonexistent/result.nrrd", kind="labelmap")
ev.emit("finished", elapsed_s=time.time() - t0)
if child:
    child.kill()
sys.exit(EXIT_OK)

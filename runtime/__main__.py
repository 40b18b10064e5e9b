import os
import sys

from .launch.local import worker_main

code = worker_main()
# A worker leaves without the interpreter's finalization: threads of the process group's libraries still alive then
# (gloo's, DeepSpeed's) can make a C++ destructor abort the process ("terminate called without an active
# exception", SIGABRT) after a run that finished and saved everything. Everything ftc writes is closed by now.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)

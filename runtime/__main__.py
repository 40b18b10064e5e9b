import sys

from .launch.local import worker_main

sys.exit(worker_main())

import sys

from ._launch import worker_main

sys.exit(worker_main())

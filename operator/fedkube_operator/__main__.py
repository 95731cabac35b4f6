"""`python -m fedkube_operator ARGS`: the same as `fedkube operator ARGS`."""

import sys

from fedkube_operator.main import main

sys.exit(main(sys.argv[1:]))

import sys

from stgen.cli import main

sys.exit(main())

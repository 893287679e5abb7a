import sys

from drupelet.node.cli.main import main

sys.exit(main())

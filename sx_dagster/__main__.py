import sys

from sx_dagster.cli import main

sys.exit(main())

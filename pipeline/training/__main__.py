"""``python -m pipeline.training --data D --run R --stage k ...``: train one stage (``pipeline.training.train``)."""

import sys

from pipeline.training.train import main

sys.exit(main())

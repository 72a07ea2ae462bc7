"""Models, generation backends, trainers: everything that imports torch."""

import datasets
import transformers

# Progress bars and info logs would flood the Dagster run log; trainers log through callbacks.
datasets.disable_progress_bars()
transformers.logging.set_verbosity_warning()
transformers.utils.logging.disable_progress_bar()

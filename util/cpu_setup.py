"""Imported first by the scripts: applies util/backend.py's CPU settings before TensorFlow starts.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS and its thread counts once, when it loads, so
these must be in the environment before anything imports it. Variables the user has
set are kept.
"""

from util import backend

backend.apply()

"""From checkpoint to a model people use: ``export`` (a standalone Hugging Face folder, merged, with the trained
prompt format as its chat template and its own lineage record), ``generate`` and ``eval`` (exact match), and a
classifier's own (``classify``: each label's probability from one forward pass, scikit-learn's metrics). Reads
checkpoints through their lineage records and plans (``trained``); the training stack is imported when used."""

"""`python -m sumlab.migrate OLD.yaml [--name NAME]`: a team's old configs as sumlab presets.

An old training config (sections general/model/tokenizer/training/inference|generation/qlora/wandb/meta, or the
same keys at other depths) becomes ``conf/experiment/NAME.yaml``; a wandb sweep file (``method`` + ``parameters``)
becomes ``conf/sweeper/NAME.yaml``. Every old key is written (with a comment naming it), found equal to sumlab's
default, or listed as not mapped with the reason; the result is composed and validated before it is written.

Modules: ``keys`` (the old keys: names, sections, aliases, and what has no sumlab equivalent), ``plan`` (what
will be written, and its YAML), ``config`` (a training config), ``sweep`` (a wandb sweep), ``conf`` (composing
and checking against the project's conf/ directory, atomic writes), ``__main__`` (the command line).
"""

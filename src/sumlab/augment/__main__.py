"""`python -m sumlab.augment [overrides]` from the project root (see conf/augment.yaml and sumlab.augment)."""

import hydra
from omegaconf import DictConfig

import sumlab
from sumlab.augment import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="augment")
def _main(cfg: DictConfig) -> None:
    from sumlab.augment import run  # after Hydra parsed the command line: `--help` stays fast

    run(cfg)


def main() -> None:
    sumlab.setup()
    _main()


if __name__ == "__main__":
    main()

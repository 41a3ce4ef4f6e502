"""Train, test and export a summarizer: `python train.py model=t5_base data=dialogsum` (see conf/train.yaml)."""

import hydra
from omegaconf import DictConfig

import sumlab

sumlab.setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from sumlab.train import run  # after Hydra parsed the command line: `--help` stays fast

    return run(cfg)


if __name__ == "__main__":
    main()

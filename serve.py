"""Serve a model and the web page: `python serve.py model_dir=outputs/train/<run>` (see conf/serve.yaml)."""

import hydra
from omegaconf import DictConfig

import sumlab

sumlab.setup()


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    from sumlab.serve import run  # after Hydra parsed the command line: `--help` stays fast

    run(cfg)


if __name__ == "__main__":
    main()

"""Generation shared by training and prediction: the generation group as a GenerationConfig, the beam-search
cache guard, and the engines (CTranslate2, transformers) behind predict.py."""

"""Real Transformers as PDEs: BERT, ALBERT and GPT-2 checkpoints imported into pdesim.

``load_pretrained(name_or_dir)`` reads a transformers checkpoint (config.json + safetensors; no
pickles) and returns a ``PretrainedModel``: the model's embedding as the initial condition, each
layer as a ``MasterPDE`` with the checkpoint's weights (one shared PDE for ALBERT, a
``LayeredPDE`` for BERT and GPT-2), and the h = 1 ``Transformer`` over the same modules, which
reproduces transformers' own forward pass. One module per architecture maps its tensor names.
transformers itself is optional: it only supplies the tokenizer.
"""

from .imported import PretrainedModel
from .load import ARCHITECTURES, load_pretrained

__all__ = ["ARCHITECTURES", "PretrainedModel", "load_pretrained"]

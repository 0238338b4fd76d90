"""Which layers of a transformer are redundant, and removing them (Hugging Face models and others).

    from ckatlas.hf import layer_redundancy, removal_curves, save_pruned, split
    calib, held_out = split(token_ids, holdout=0.5)
    result = layer_redundancy(model, calib)             # CKA heatmap + blocks, angular distance, Block Influence
    result = removal_curves(model, result, held_out)    # held-out loss (or accuracy) after each removal
    print(result.summary())
    save_pruned(model, result.removed("cka", 2), "pruned/")   # from_pretrained("pruned/") loads it

Modules: `stack` (the layer stack; removing layers), `removal` (the criteria and curves),
`data` (token ids from text and files), `loading` (a model folder, or a hub name from the Hugging
Face cache or, when allowed, the hub: `load_model("gpt2")`).
"""

from ckatlas.hf.data import load_inputs, read_text, split, text_token_ids
from ckatlas.hf.loading import load_model, resolve_model
from ckatlas.hf.removal import CRITERIA, LayerRemoval, evaluate, layer_redundancy, removal_curves
from ckatlas.hf.stack import LayerStack, layer_stack, layers_removed, remove_layers, save_pruned

__all__ = [
    "CRITERIA", "LayerRemoval", "LayerStack", "evaluate", "layer_redundancy", "layer_stack", "layers_removed",
    "load_inputs", "load_model", "read_text", "remove_layers", "removal_curves", "resolve_model", "save_pruned",
    "split", "text_token_ids",
]

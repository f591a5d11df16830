"""Graph passes: each is a function from graph to graph with no I/O.

- :func:`check.check` - structural checks (acyclic, inputs defined, names, reachability)
- :func:`shapes.infer_shapes` - output shape of every node
- :func:`phases.inference_graph` / :func:`phases.training_graph` - drop training-only
  heads and dropout, or bypass inference-only nodes
- :func:`fold.fold_batch_norm` - fold BatchNorm into the preceding convolution (ONNX backend)
- :func:`fold_norms.fold_norms`, :func:`fuse.fuse_siblings`, :func:`hoist.hoist_activations` -
  the rewrites of an inference build (:mod:`nasdsl.optimize`), recorded as weight derivations
  (:mod:`derive`); each leaves a flat block tree (:mod:`flatten`)
"""

"""Graph passes: each is a function from graph to graph with no I/O.

- :func:`check.check` - structural checks (acyclic, inputs defined, names, reachability)
- :func:`shapes.infer_shapes` - output shape of every node (and :mod:`symbolic`: sizes as classes write them)
- :func:`phases.inference_graph` / :func:`phases.training_graph` - drop training-only
  heads and dropout, or bypass inference-only nodes
- :func:`fold.fold_norms`, :func:`fuse.fuse_siblings`, :func:`hoist.hoist_activations` -
  the rewrites of an inference build (:mod:`nasdsl.optimize`), recorded as weight derivations
  (:mod:`derive`)

The passes that change nodes do it through :mod:`nasdsl.ir.rewrite`, which keeps the block
tree describing them; :mod:`pipeline` runs passes by name and verifies the graph between them.
"""

"""The runtime layer: how requests become encoder batches and answers.

`admission` decides which requests start, `queue` holds encoder rows and picks
batches, `executor` runs a batch's forward and each head's share of it,
`batcher` is the owner loop between them, and `runner` takes task inputs
through preprocessing, the batcher and postprocessing (`analyze` for several
heads at once). It deals in task inputs and never sees a protobuf field.
Imports the model layer and the plugin contract.
"""

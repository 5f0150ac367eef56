"""The model layer: the shared encoder and its packed forward, and the plugins' heads loaded onto it.

`encoder` loads one BERT encoder (`SharedEncoder`) and hands heads a
read-only view of it; `plugins` discovers plugins, checks what they register
(`checks`) and loads their heads; `default_model` finds the offline default.
Imports the plugin contract and the kernels, never the runtime or the wire.
"""

"""Tensor kernels: pure PyTorch functions every layer may use (they import nothing of bertserve).

`packed` runs BERT layers on rows laid end to end, without padding;
`quantize` turns an encoder's linear layers into int8 ones for the CPU.
"""

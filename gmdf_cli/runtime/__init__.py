"""Compiled inference: a scan on the CPU without torch.

A CPU scan spends 3-4 s of a one-image run on importing torch, and torch's CPU kernels run the MobileNetV2 default
about 3x slower than OpenCV's DNN module runs the same network. So the first CPU scan of a model OpenCV can run
exports it, and its face detector, to ONNX graphs (``export``: torch, needed once), checks that OpenCV's outputs
match torch's, and keeps them in a cache (``graphs``); later scans load the graphs and run them with OpenCV
(``compiled``), never importing torch. ``plan`` decides, before anything heavy loads, which way a scan goes.
"""

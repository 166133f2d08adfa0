"""Driving-input preparation for SCAIL-2: end-to-end copy or a pose-driven 3D skeleton render.

`prepare_driving` is the entry point; `PoseWeights` configures the optional DWPose / NLF models (without them
the mediapipe model embedded in its wheel is used). No Prefect in here.
"""
from scailflow.pose.stage import DrivingResult, prepare_driving
from scailflow.pose.weights import PoseWeights

__all__ = ["DrivingResult", "PoseWeights", "prepare_driving"]

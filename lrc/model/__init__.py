"""The video MLLM: the model that plugins assemble (encoder → compressor → projector → LLM), TPO's task
heads wiring, token dropout, and the span and mask geometry heads use."""

"""Figures and interactive explorers for the chapters.

Each function takes plain data (tensors, token strings) or a model, and returns the data it drew
together with the matplotlib figure, so tests can check the data and chapters can show the figure.
Token strings shown in HTML widgets are escaped.
"""

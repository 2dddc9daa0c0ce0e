"""mtkit: neural machine translation with the recurrent models of Dive into Deep Learning."""

__version__ = "0.1.0"

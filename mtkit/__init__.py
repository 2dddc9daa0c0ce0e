"""mtkit: neural machine translation with the recurrent models of Dive into Deep Learning."""

import os

# Intel MKL's conditional numerical reproducibility, strict mode: without it a matrix product's
# last bits depend on how many threads MKL gives it (a packed RNN's small products differ
# between 1 and 2 threads on this project's machines), so two same-seed CPU runs could drift
# apart. MKL reads it once, when it starts: this runs before anything imports torch. A value
# already in the environment wins (MKL_CBWR= with nothing turns it off).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"

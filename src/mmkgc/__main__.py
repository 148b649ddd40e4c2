"""``python -m mmkgc`` runs the command line (also usable as ``torchrun -m mmkgc ...``)."""

from mmkgc.cli import main

main()

"""Interactive lesson widgets (lessons 6-2-1, 6-2-2, 6-2-4 and 6-2-6).

Five small ipywidgets apps, each built in one line and shown by putting it
last in a notebook cell:

>>> from ddpm import widgets                                   # doctest: +SKIP
>>> widgets.NoiseSlider()           # t = 0..T over the T-shirt, variance bar, preview strip
>>> widgets.AlphaBarCurve()         # alpha_bar curve, live readouts, linear/cosine toggle
>>> widgets.Playground("circle")    # 80-step forward then (oracle) reverse, step/play/pause
>>> widgets.TrajectoryPlayer()      # a REAL reverse run of the shipped model: x_t, eps_hat, x0_hat
>>> widgets.Inpainter()             # cover a rectangle of a real image, let the model fill it in

Every widget returns an object with ``.widget`` (the ipywidgets container, for
embedding in your own layout) and ``_ipython_display_``.  Pictures are drawn
with matplotlib's object API onto an Agg canvas and sent as PNG to an
``ipywidgets.Image``, so the widgets need no interactive matplotlib backend,
can be built headless, and never touch pyplot's global state.  What is shown
is also kept as plain state (``.image``, ``.texts``, the fractions and
readouts) so code and tests can drive the controls (``.t = 500``,
``.kind = "cosine"``, ``.step()``) and check the result.

ipywidgets and matplotlib are imported lazily, when a widget is built:
``pip install 'ddpm[notebooks]'``.

One module per widget (``noise_slider``, ``alpha_bar_curve``, ``playground``,
``trajectory_player``) over ``_common`` (figures, natural-size image views, the
regime sentences, the frame player); every name is importable from here.
"""
from ._common import (LESSON_TS, REGIME_THRESHOLDS_DB, REVERSE_REGIME_THRESHOLDS_DB, regime,
                      reverse_regime)
from .alpha_bar_curve import AlphaBarCurve
from .inpainter import Inpainter
from .noise_slider import NoiseSlider
from .playground import Playground
from .trajectory_player import TrajectoryPlayer

__all__ = ["NoiseSlider", "AlphaBarCurve", "Playground", "TrajectoryPlayer", "Inpainter", "regime",
           "reverse_regime", "REGIME_THRESHOLDS_DB", "REVERSE_REGIME_THRESHOLDS_DB", "LESSON_TS"]

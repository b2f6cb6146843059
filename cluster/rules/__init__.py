"""The venue's money and price rules, shared by several nodes and tools, pure: they import only the
standard library, msgspec and each other (tests/unit/test_import_rules.py enforces it).

- `units.py`: exact decimal <-> integer units, PPM, ceiling division;
- `ladder.py`: the tiered maintenance ladder; `backstop.py`: the backstop auction (who takes
  over a bankrupt position, how much); `margin.py`: position value, equity, fees and IM
  rounded against the account, the trigger margin and the liquidation trigger (risk and the
  liquidator both); `prices.py`: liquidation and bankruptcy prices; `funding.py`: the funding
  rate and payments;
- `bands.py`: the price band and the market-order protection price; `stress.py`: the portfolio
  stress grid; `adl.py`: the auto-deleveraging score, queue and quantiles.

A rule lives here once, never copied.
"""

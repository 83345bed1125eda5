"""Rating: what a call costs and how long a credit lasts.

* ``model``   -- rates, plans, ``rate_call`` and ``max_duration``; pure (no I/O, no clock);
* ``store``   -- rate plans, rates and account assignments in SQL;
* ``csvfile`` -- the rates CSV: import (all or nothing, every bad line listed) and export;
* ``cli``     -- ``sipledger rates ...``.
"""

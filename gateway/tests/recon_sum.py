#!/usr/bin/env python3
"""Independent check of a reconciliation CSV: re-adds its columns with the csv and decimal
modules (no code shared with the engine) and prints the totals as JSON strings.

usage: recon_sum.py REPORT.csv
"""
import csv
import json
import sys
from decimal import Decimal

EXPECTED = ["date", "payment_intent_id", "channel", "payer_amount", "payer_currency",
            "settlement_amount", "settlement_currency", "fx_rate", "fee", "payout"]


def main(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != EXPECTED:
            raise SystemExit(f"unexpected columns: {reader.fieldnames}")
        payer, settlement, fees, payout, rows = {}, Decimal(0), Decimal(0), Decimal(0), 0
        for row in reader:
            rows += 1
            cur = row["payer_currency"]
            payer[cur] = payer.get(cur, Decimal(0)) + Decimal(row["payer_amount"])
            settlement += Decimal(row["settlement_amount"])
            fees += Decimal(row["fee"])
            payout += Decimal(row["payout"])
            # Every row on its own: settlement = fee + payout.
            if Decimal(row["settlement_amount"]) != Decimal(row["fee"]) + Decimal(row["payout"]):
                raise SystemExit(f"row does not add up: {row}")
    q = Decimal("0.01")
    print(json.dumps({
        "total_transactions": rows,
        "total_payer_amount": {k: str(v) for k, v in payer.items()},
        "total_settlement": str(settlement.quantize(q)),
        "total_fees": str(fees.quantize(q)),
        "net_payout": str(payout.quantize(q)),
    }))


if __name__ == "__main__":
    main(sys.argv[1])

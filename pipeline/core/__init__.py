"""The pure core: order book, matching, risk arithmetic. No I/O here."""

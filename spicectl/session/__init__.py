"""Sessions to one guest: where its SPICE server is, a ticket, and how to reach it."""

"""Results files (JSON lines, one record per measurement) and the HTML report built from them."""

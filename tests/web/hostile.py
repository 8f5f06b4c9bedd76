"""Hostile strings that must never reach a page unescaped (the fuzzing and the browser use them)."""
XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>",
       "javascript:alert(1)"]
RAW_MARKUP = ("<script>alert", "<img src=x", "<svg onload")  # must never reach a page unescaped

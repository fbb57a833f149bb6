"""Everything tests share: the API prefix, factories, sample media, feed and Supabase helpers.

One home for each constant: a test module imports `API` from here rather than defining it.
"""

API = "/api/v1"

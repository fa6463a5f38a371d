"""The review page: a queue of low-confidence results for people to accept or correct (`listings review-ui`)."""

"""One request's path: params (the body) -> prompt (tags, tokens) -> plan (engine requests) -> runner (submit,
wait) -> results (images out).
"""

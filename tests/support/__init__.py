"""What the tests (and the examples' asset scripts) build and start: tiny real models and data, real servers."""

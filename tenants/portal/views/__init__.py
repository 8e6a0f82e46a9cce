"""Portal views, one module per area of the navigation."""

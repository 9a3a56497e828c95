"""gridwatch: the application's entry point (CLI), its settings and its clock."""

"""Drop-in adapters that make other trainers use tempo_fast kernels (imported only on request)."""

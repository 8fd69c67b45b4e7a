"""mai_repro.data"""

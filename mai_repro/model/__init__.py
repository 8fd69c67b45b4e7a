"""mai_repro.model"""

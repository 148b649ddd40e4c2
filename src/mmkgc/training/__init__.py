"""mmkgc.training"""

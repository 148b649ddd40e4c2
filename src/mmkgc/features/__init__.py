"""mmkgc.features"""

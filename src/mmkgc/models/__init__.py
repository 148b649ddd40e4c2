"""mmkgc.models"""

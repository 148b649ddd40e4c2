"""mmkgc.data"""

"""mmkgc.nn"""

"""mmkgc.evaluation"""

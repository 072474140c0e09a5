"""slow"""
